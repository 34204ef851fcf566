"""robotaxi_stack: onboard L4 autonomy stack for a driverless ride-hailing fleet."""
