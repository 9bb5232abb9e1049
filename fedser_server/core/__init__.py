"""The server's pure algorithmic core: no I/O, no gRPC, no clocks."""
