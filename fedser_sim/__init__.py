"""`fedser-sim`: a whole federation on one machine, from a corpus laid out like nemo4."""
