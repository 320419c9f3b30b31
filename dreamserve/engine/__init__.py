"""Image generators behind one seam; see base.py. Importing this package never imports torch."""
