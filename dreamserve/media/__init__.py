"""Input and output images: fetch references safely, decode with limits, resize, encode."""
