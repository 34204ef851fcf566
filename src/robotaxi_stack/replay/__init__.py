"""robotaxi_stack.replay."""
