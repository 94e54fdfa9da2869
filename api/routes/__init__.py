"""One module per resource; each route parses, authorises, calls one service method and
answers."""
