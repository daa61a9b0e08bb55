"""The warm spare: a node in the reservation with data staged, the newest checkpoint pulled and health
checked, swapped in when a training node fails."""
