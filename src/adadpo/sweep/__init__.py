"""Learning-rate x beta x loss grids: parse the grid (`parse`), name and validate cells (`grid`), run them with a
shared reference pass and skip finished ones (`runs`), and collect results (`results`)."""
