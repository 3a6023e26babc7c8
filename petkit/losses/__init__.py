"""petkit.losses"""
