"""HTTP faces of the service; each module is one blueprint over the same upstream core."""
