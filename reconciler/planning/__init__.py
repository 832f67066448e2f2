"""Planning: desired graph + state (+ drift) -> Plan. Pure: no Docker, no files."""
