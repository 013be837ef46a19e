"""Golden models, importable without a simulator: the bit-exact DE-SNE model (``desne``), its
float64 reference (``desne_float``) and the distance engine's transaction model (``distance``).

They import only ``nms.rtl`` (fixed-point formats, tables, the job interface) and NumPy.
"""
