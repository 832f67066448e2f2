stand-in for the TensorFlow SavedModel graph of half_plus_two (y = 0.5 * x + 2)
