"""petkit.retrieval"""
