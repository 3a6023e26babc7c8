"""An example petkit plugin package."""
