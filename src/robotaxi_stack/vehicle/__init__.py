"""robotaxi_stack.vehicle."""
