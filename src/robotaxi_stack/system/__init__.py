"""robotaxi_stack.system."""
