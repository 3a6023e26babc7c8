"""petkit.engine"""
