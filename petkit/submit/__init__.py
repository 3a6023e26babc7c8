"""petkit.submit"""
