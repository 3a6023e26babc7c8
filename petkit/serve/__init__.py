"""petkit serve: the lost-pet finder service (FastAPI), its gallery and web page."""
