"""robotaxi_stack.perception."""
