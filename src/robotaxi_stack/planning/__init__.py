"""robotaxi_stack.planning."""
