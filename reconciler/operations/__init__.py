"""Operations (plan, apply, destroy, import, recover) that every front end calls: plain
functions returning result dataclasses. The CLI only parses options, renders results and maps
errors to exit codes."""
