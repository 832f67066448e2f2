"""Operations: what reconciler does (plan, apply, destroy, import, recover), as functions that
take a plain request and return plain results. The CLI, the tests and any other front end call
these; none of them prints, prompts or chooses an exit code.
"""
