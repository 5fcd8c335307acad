"""The plugin: what makes the stock ``yolo`` command understand yolo-attn layers.

* :mod:`~yolo_attn.plugin.registry` -- name -> (class, kind); the only public way to add a layer.
* :mod:`~yolo_attn.plugin.integration` -- the one module that touches Ultralytics internals (parser branch, YAML
  lookup, pretrained transfer, fuse, safe-load allow-list).
* :mod:`~yolo_attn.plugin.autoload` -- the start-up hook the installed ``.pth`` file imports.

Importing this package is cheap (no torch): the start-up hook imports it in every Python process.
"""
