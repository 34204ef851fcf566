"""robotaxi_stack.bringup."""
