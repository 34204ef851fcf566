"""robotaxi_stack.prediction."""
