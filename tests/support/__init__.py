"""What tests share with each other and with the benchmarks: harnesses that are no
part of the product."""
