"""OFER for Blender: the add-on package (standard library, numpy and bpy only).

The extension root (the repository root ``__init__.py``) delegates to :mod:`.registration`. Modules
without ``bpy`` in their imports (``worker_client``, ``job``, ``skinning``, ``hypotheses``,
``managed_env``, ``face_marks_math``, ``face_list``) are plain Python and tested without Blender.
"""
