"""petkit.data"""
