"""robotaxi_stack.common."""
