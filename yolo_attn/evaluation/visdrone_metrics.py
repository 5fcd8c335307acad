"""The official VisDrone2019-DET protocol (VisDrone2018-DET-toolkit, MATLAB) re-implemented in numpy.

Rules, in the order the toolkit applies them (``utils/saveAnnoRes.m``, ``dropObjectsInIgr.m``, ``calcAccuracy.m``,
``evalRes.m``, ``compOas.m``, ``VOCap.m``; behaviour confirmed by running the toolkit under GNU Octave):

1. **Ignored-region filter**, per image: GT rows of the ignored-region category (0) are taken out of the GT. If the
   image has any, an H x W mask is painted with every region, 1-based and *inclusive*: after ``max(1, .)`` on
   x, y, w, h, rows ``y..min(H, y+h)`` and columns ``x..min(W, x+w)`` -- (h+1) x (w+1) pixels. Each remaining GT
   row and **every** detection row (any category) is tested with ``p = max(1, round(x, y, w, h))`` (round half away
   from zero), ``x = clamp(p1, 1, W)``, ``y = clamp(p2, 1, H)``, ``x2 = min(W, x + w)``,
   ``y2 = max(1, min(H, y + h))``; ``covered`` = mask pixels in rows ``y+1..y2``, columns ``x+1..x2`` (an integral
   image). A row is kept iff ``covered / (w h) < 0.5`` -- exactly one half is removed. Removed rows vanish.
2. **maxDets by rank across classes**: per image the first N surviving detections *of all classes* are used
   (N = 1, 10, 100, 500); filtered rows take no slot, detections of categories outside the evaluated classes
   (e.g. 11 "others") take slots but are never scored. AP/AP50/AP75 use N = 500.
3. **Matching** per image, class and IoU threshold: detections by descending score (stable), GT with normal rows
   first (stable); each detection takes the unmatched normal GT with the highest IoU >= thr, ties going to the later
   GT; failing that, the first ignore-flagged GT (score 0 in the file, ``iscrowd`` in the JSON) whose
   intersection / detection area >= thr absorbs it (neither TP nor FP). IoU uses ``x2 = x + w`` (no +1).
4. **Accumulation** per class over all images (image order, then stable by score): recall = tp / max(1, nGT) where
   nGT counts *all* GT rows of the class including ignore-flagged ones (as the toolkit's ``numel(gtMatch)``);
   precision = tp / max(1, tp + fp); AP = VOC all-point area (sentinels (0, 0) and (1, 0), running max from the
   right); AR(N) = final recall at limit N. Both are averaged over IoU 0.50:0.05:0.95.
5. **Class averaging is weighted** by the number of images whose filtered GT contains the class (classes absent from
   the GT are excluded): the toolkit builds ``evalClass`` with one entry per (image, class) and takes ``mean2``.

Where this may still differ from the MATLAB toolkit (documented on purpose):

- The toolkit does not sort detections; it takes the first N rows of each result file, assuming descending scores.
  Here detections are sorted by score (stable), which equals the toolkit on sorted files.
- Image order (it matters only for exact score ties across images) follows GT ``file_name`` order, the order of the
  toolkit's file listing of the annotation folder.
- Thresholds are ``numpy.linspace(0.5, 0.95, 10)``; MATLAB's colon operator may differ by one ulp, visible only
  for an IoU that equals a threshold to the last bit.
- Ignored regions with non-integer coordinates are rounded half away from zero before painting (MATLAB would fail
  on fractional indices); the converter drops zero-size regions, which the toolkit would paint as 2-pixel strips
  after ``max(1, .)``; boxes clipped by the converter are evaluated from ``raw_bbox`` (the unclipped original).
- Scores are compared in float64 after JSON round-trip; the toolkit reads the text result files in double.
- Results are fractions in [0, 1]; the toolkit prints percentages.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["VISDRONE_MAX_DETS", "evaluate_visdrone", "ignore_filter", "match_detections", "round_half_away", "voc_ap"]

VISDRONE_MAX_DETS = (1, 10, 100, 500)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def round_half_away(a: np.ndarray) -> np.ndarray:
    """MATLAB ``round``: halves go away from zero (numpy's ``round`` goes to even)."""
    a = np.asarray(a, dtype=float)
    return np.sign(a) * np.floor(np.abs(a) + 0.5)


def ignore_filter(boxes: np.ndarray, regions: np.ndarray, width: int, height: int) -> np.ndarray:
    """Keep-mask of ``dropObjectsInIgr.m``: True for rows covered by ignored regions less than one half.

    Args:
        boxes (np.ndarray): (N, 4) ``[x, y, w, h]`` rows (GT or detections).
        regions (np.ndarray): (M, 4) ignored regions ``[x, y, w, h]``.
        width (int): image width W.
        height (int): image height H.

    Returns:
        (np.ndarray): (N,) bool, True = keep.
    """
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    regions = np.asarray(regions, dtype=float).reshape(-1, 4)
    if not len(regions) or not len(boxes):
        return np.ones(len(boxes), dtype=bool)
    W, H = int(width), int(height)
    mask = np.zeros((H, W), dtype=np.int64)
    for x, y, w, h in np.maximum(1, round_half_away(regions)).astype(np.int64):
        mask[y - 1 : min(H, y + h), x - 1 : min(W, x + w)] = 1  # 1-based inclusive -> 0-based half-open
    integral = np.zeros((H + 1, W + 1), dtype=np.int64)  # integral[r, c] = MATLAB intIgrMap(r, c) for r, c >= 1
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    pos = np.maximum(1, round_half_away(boxes))
    x = np.clip(pos[:, 0], 1, W).astype(np.int64)
    y = np.clip(pos[:, 1], 1, H).astype(np.int64)
    w, h = pos[:, 2], pos[:, 3]
    x2 = np.minimum(W, x + w).astype(np.int64)
    y2 = np.maximum(1, np.minimum(H, y + h)).astype(np.int64)
    covered = integral[y, x] + integral[y2, x2] - integral[y, x2] - integral[y2, x]
    return covered / (w * h) < 0.5


def _overlaps(dt: np.ndarray, gt: np.ndarray, gt_ignore: np.ndarray) -> np.ndarray:
    """``compOas.m``: IoU, or intersection / detection area for ignore-flagged GT; x2 = x + w."""
    ix = np.minimum(dt[:, None, 0] + dt[:, None, 2], gt[None, :, 0] + gt[None, :, 2]) - np.maximum(
        dt[:, None, 0], gt[None, :, 0]
    )
    iy = np.minimum(dt[:, None, 1] + dt[:, None, 3], gt[None, :, 1] + gt[None, :, 3]) - np.maximum(
        dt[:, None, 1], gt[None, :, 1]
    )
    inter = np.where((ix > 0) & (iy > 0), ix * iy, 0.0)
    da = (dt[:, 2] * dt[:, 3])[:, None]
    union = np.where(gt_ignore[None, :], da, da + (gt[:, 2] * gt[:, 3])[None, :] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_detections(
    dt: np.ndarray, gt: np.ndarray, gt_ignore: np.ndarray, thresholds: np.ndarray = IOU_THRESHOLDS
) -> np.ndarray:
    """``evalRes.m`` for all thresholds at once.

    Args:
        dt (np.ndarray): (D, 4) detections, already in descending score order (stable).
        gt (np.ndarray): (G, 4) GT boxes in file order.
        gt_ignore (np.ndarray): (G,) bool, ignore-flagged GT.
        thresholds (np.ndarray): (T,) IoU thresholds.

    Returns:
        (np.ndarray): (T, D) int8 flags: 1 true positive, 0 false positive, -1 absorbed by an ignore-flagged GT.
    """
    T, D = len(thresholds), len(dt)
    flags = np.zeros((T, D), dtype=np.int8)
    if not D or not len(gt):
        return flags
    order = np.argsort(gt_ignore, kind="stable")  # normal GT first, file order kept (MATLAB sort is stable)
    gt, gt_ignore = gt[order], gt_ignore[order]
    n_norm = int((~gt_ignore).sum())
    oa = _overlaps(dt, gt, gt_ignore)
    thr = np.asarray(thresholds, dtype=float)[:, None]
    matched = np.zeros((T, n_norm), dtype=bool)
    rows = np.arange(T)
    for d in range(D):
        if n_norm:
            o = oa[d, :n_norm]
            vals = np.where(~matched & (o[None, :] >= thr), o[None, :], -1.0)
            j = n_norm - 1 - np.argmax(vals[:, ::-1], axis=1)  # last index of the maximum: ties -> later GT
            hit = vals[rows, j] >= 0
            matched[rows[hit], j[hit]] = True
            flags[hit, d] = 1
        else:
            hit = np.zeros(T, dtype=bool)
        if n_norm < len(gt):
            absorbed = (oa[d, n_norm:][None, :] >= thr).any(axis=1) & ~hit
            flags[absorbed, d] = -1
    return flags


def voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """``VOCap.m``: all-point interpolated area under the precision envelope, sentinels (0, 0) and (1, 0)."""
    mrec = np.concatenate(([0.0], np.asarray(rec, dtype=float), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(prec, dtype=float), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def evaluate_visdrone(
    gt: dict[str, Any],
    dets: list[dict[str, Any]],
    max_dets: list[int] | tuple[int, ...] = VISDRONE_MAX_DETS,
) -> dict[str, Any]:
    """Official VisDrone-DET metrics (AP, AP50, AP75, AR@1/10/100/500) on a COCO GT from this package.

    Ignored regions are the annotations of ``gt["yolo_attn"]["ignored_region_category_id"]`` (0 for VisDrone; none
    when the key is absent), evaluated classes are ``gt["categories"]``, ``iscrowd`` marks ignore-flagged GT and
    ``raw_bbox`` (when present) replaces the clipped ``bbox``. Image sizes come from ``gt["images"]``.

    Args:
        gt (dict): COCO ground truth (e.g. written by :func:`~yolo_attn.evaluation.convert_visdrone`).
        dets (list[dict]): validated COCO detections in the GT's category ids.
        max_dets (list[int]): per-image limits across classes; AP uses the last (500 in the toolkit).

    Returns:
        (dict): ``AP, AP50, AP75, AR@<N>``, ``per_class`` (AP, AP50, AP75, AR at the last N, n_gt, n_images used as
            the class weight, n_pred) and the protocol description; ``APs/APm/APl`` are None (no size bins).
    """
    max_dets = sorted(int(m) for m in max_dets)
    meta = gt.get("yolo_attn") or {}
    region_id = meta.get("ignored_region_category_id")
    classes = [c["id"] for c in gt["categories"]]
    class_index = {c: k for k, c in enumerate(classes)}
    names = {c["id"]: c.get("name", str(c["id"])) for c in gt["categories"]}
    C, T, M = len(classes), len(IOU_THRESHOLDS), len(max_dets)

    gt_by_img: dict[Any, list] = {}
    for a in gt["annotations"]:
        gt_by_img.setdefault(a["image_id"], []).append(a)
    dt_by_img: dict[Any, list] = {}
    for d in dets:
        dt_by_img.setdefault(d["image_id"], []).append(d)
    images = sorted(gt["images"], key=lambda im: (str(im.get("file_name", "")), str(im["id"])))

    n_images = np.zeros(C, dtype=np.int64)  # class weights
    n_gt = np.zeros(C, dtype=np.int64)
    n_pred = np.zeros(C, dtype=np.int64)
    # per class: lists over images of (scores, flags (T, D), ranks)
    acc: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(C)]
    n_removed_gt = n_removed_dt = 0
    for img in images:
        anns = gt_by_img.get(img["id"], [])
        box_of = [a.get("raw_bbox", a["bbox"]) for a in anns]
        is_region = np.array([region_id is not None and a["category_id"] == region_id for a in anns], dtype=bool)
        g_box = np.array([b for b, r in zip(box_of, is_region) if not r], dtype=float).reshape(-1, 4)
        g_cat = np.array([a["category_id"] for a, r in zip(anns, is_region) if not r])
        g_ign = np.array([bool(a.get("iscrowd", 0)) for a, r in zip(anns, is_region) if not r], dtype=bool)
        regions = np.array([b for b, r in zip(box_of, is_region) if r], dtype=float).reshape(-1, 4)

        ds = dt_by_img.get(img["id"], [])
        scores = np.array([d["score"] for d in ds], dtype=float)
        order = np.argsort(-scores, kind="stable")
        d_box = np.array([ds[i]["bbox"] for i in order], dtype=float).reshape(-1, 4)
        d_cat = np.array([ds[i]["category_id"] for i in order])
        scores = scores[order]
        if len(regions):
            keep_g = ignore_filter(g_box, regions, img["width"], img["height"])
            keep_d = ignore_filter(d_box, regions, img["width"], img["height"])
            n_removed_gt += int((~keep_g).sum())
            n_removed_dt += int((~keep_d).sum())
            g_box, g_cat, g_ign = g_box[keep_g], g_cat[keep_g], g_ign[keep_g]
            d_box, d_cat, scores = d_box[keep_d], d_cat[keep_d], scores[keep_d]
        # Only the first max_dets[-1] surviving rows of any category can ever be scored.
        d_box, d_cat, scores = d_box[: max_dets[-1]], d_cat[: max_dets[-1]], scores[: max_dets[-1]]
        ranks = np.arange(len(scores))
        for c, k in class_index.items():
            gsel = g_cat == c if len(g_cat) else np.zeros(0, dtype=bool)
            ng = int(gsel.sum())
            n_gt[k] += ng
            n_images[k] += ng > 0
            dsel = d_cat == c if len(d_cat) else np.zeros(0, dtype=bool)
            if not dsel.any():
                continue
            n_pred[k] += int(dsel.sum())
            flags = match_detections(d_box[dsel], g_box[gsel], g_ign[gsel])
            acc[k].append((scores[dsel], flags, ranks[dsel]))

    ap = np.zeros((C, T))
    ar = np.zeros((C, T, M))
    for k in range(C):
        if acc[k]:
            s_all = np.concatenate([a[0] for a in acc[k]])
            f_all = np.concatenate([a[1] for a in acc[k]], axis=1)
            r_all = np.concatenate([a[2] for a in acc[k]])
        else:
            s_all, f_all, r_all = np.zeros(0), np.zeros((T, 0), dtype=np.int8), np.zeros(0, dtype=np.int64)
        denom = max(1, int(n_gt[k]))
        for m, N in enumerate(max_dets):
            sel = r_all < N
            idrank = np.argsort(-s_all[sel], kind="stable")
            f = f_all[:, sel][:, idrank]
            tp = np.cumsum(f == 1, axis=1)
            rec = tp / denom
            if f.shape[1]:
                ar[k, :, m] = rec[:, -1]
            if m == M - 1:  # AP at the largest limit, as the toolkit (its last loop iteration)
                fp = np.cumsum(f == 0, axis=1)
                prec = tp / np.maximum(1, tp + fp)
                ap[k] = [voc_ap(rec[t], prec[t]) for t in range(T)]

    weights = n_images.astype(float)
    present = weights > 0
    t50, t75 = int(np.argmin(np.abs(IOU_THRESHOLDS - 0.5))), int(np.argmin(np.abs(IOU_THRESHOLDS - 0.75)))

    def wmean(v: np.ndarray) -> float:
        return float(np.sum(v[present] * weights[present]) / weights[present].sum()) if present.any() else -1.0

    res: dict[str, Any] = {
        "protocol": "visdrone",
        "backend": "numpy (VisDrone2018-DET-toolkit rules)",
        "max_dets": max_dets,
        "bins": None,
        "area_source": None,
        "AP": wmean(ap.mean(axis=1)),
        "AP50": wmean(ap[:, t50]),
        "AP75": wmean(ap[:, t75]),
        "APs": None,
        "APm": None,
        "APl": None,
    }
    for m, N in enumerate(max_dets):
        res[f"AR@{N}"] = wmean(ar[:, :, m].mean(axis=1))
    res["per_class"] = [
        {
            "id": c,
            "name": names[c],
            "AP": float(ap[k].mean()) if present[k] else -1.0,
            "AP50": float(ap[k, t50]) if present[k] else -1.0,
            "AP75": float(ap[k, t75]) if present[k] else -1.0,
            f"AR@{max_dets[-1]}": float(ar[k, :, -1].mean()) if present[k] else -1.0,
            "n_gt": int(n_gt[k]),
            "n_images": int(n_images[k]),
            "n_pred": int(n_pred[k]),
        }
        for c, k in class_index.items()
    ]
    res["gt_counts"] = {"all": int(n_gt.sum()), "removed_by_ignored_regions": n_removed_gt}
    res["n_images"] = len(images)
    res["n_gt"] = int(n_gt.sum())
    res["n_pred"] = len(dets)
    res["n_pred_removed_by_ignored_regions"] = n_removed_dt
    res["class_weights"] = "number of images whose filtered GT contains the class (toolkit evalClass)"
    return res
