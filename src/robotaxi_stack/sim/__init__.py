"""robotaxi_stack.sim."""
