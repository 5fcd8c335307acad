"""Start-up hook: makes the stock ``yolo`` command understand plugin layers, at near-zero cost.

``yolo_attn_autoload.pth`` (installed into site-packages) imports this module when any Python starts. It imports
neither torch nor Ultralytics: it only puts a tiny finder on ``sys.meta_path`` that waits for
``ultralytics.nn.tasks`` to be imported and then calls :func:`yolo_attn.plugin.integration.register_ultralytics`.
Set ``YOLO_ATTN_DISABLE=1`` to opt out.
"""

import os
import sys

DISABLE_ENV = "YOLO_ATTN_DISABLE"
_TARGET = "ultralytics.nn.tasks"


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to 1/true/yes/on (any case)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def disabled() -> bool:
    """True when the user opted out with ``YOLO_ATTN_DISABLE`` set to 1/true/yes/on."""
    return env_flag(DISABLE_ENV)


class _Loader:
    """Delegates to the real loader, then registers the plugin once the tasks module has executed."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = self._loader  # hide the wrapper from anything that inspects the module later
        from yolo_attn.plugin.integration import _register_from_hook

        _register_from_hook()


class UltralyticsTasksFinder:
    """A ``sys.meta_path`` finder that reacts only to ``ultralytics.nn.tasks``."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, UltralyticsTasksFinder):
                continue
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


def install() -> None:
    """Install the finder (idempotent); register at once if Ultralytics' parser is already imported."""
    if disabled():
        return
    if _TARGET in sys.modules:
        from yolo_attn.plugin.integration import _register_from_hook

        _register_from_hook()
        return
    if not any(isinstance(f, UltralyticsTasksFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, UltralyticsTasksFinder())


install()
