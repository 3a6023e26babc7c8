"""petkit.evaluation"""
