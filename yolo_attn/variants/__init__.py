"""Model variants: editing YAMLs row by row, placing layers, naming variants, and moving weights between them.

* :mod:`~yolo_attn.variants.edit` -- text-level row edits with every ``from`` index rewired (comments kept).
* :mod:`~yolo_attn.variants.placement` -- ``yolo-attn place`` / ``inspect`` on top of the editor.
* :mod:`~yolo_attn.variants.transfer` -- aligning a variant's rows with its base, and weight transfer.
"""
