"""Sans-I/O cores: plain objects that take a clock reading and an outcome and
return a decision. Nothing here awaits, sleeps or reads a clock."""
