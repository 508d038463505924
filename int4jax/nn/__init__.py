"""Neural-network building blocks shared by every model family: QDense, attention, layer norm, activations."""
