module tracer/scenarios

go 1.19
