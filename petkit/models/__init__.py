"""petkit.models"""
