"""Figures: per-run training dynamics and gradient balance (`runs`), metric vs beta over a sweep (`grid`)."""
