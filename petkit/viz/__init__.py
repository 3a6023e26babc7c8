"""petkit.viz"""
