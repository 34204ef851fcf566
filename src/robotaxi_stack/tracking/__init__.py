"""robotaxi_stack.tracking."""
