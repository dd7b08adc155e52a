module gpucaas/benchmarks/loadgen

go 1.22
