"""petkit.miners"""
