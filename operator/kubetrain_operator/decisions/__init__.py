"""Pure decision functions of the operator: inputs in, a decision out, no I/O."""
