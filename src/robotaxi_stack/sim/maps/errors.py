"""Typed errors of the map core (all subclass ValueError, per the house rules)."""


class MapError(ValueError):
    """Base class of every error raised by robotaxi_stack.sim.maps."""


class MapParamError(MapError):
    """A map generator parameter is unknown, of the wrong type or out of its allowed range."""


class MapFormatError(MapError):
    """A map file cannot be read or written, or holds no usable lanelets."""


class OffMapError(MapError):
    """A position is not on any lane of the map (or on none with a matching heading)."""


class RouteNotFoundError(MapError):
    """No drivable route exists between two poses under the vehicle traffic rules."""
