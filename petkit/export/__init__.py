"""petkit.export"""
