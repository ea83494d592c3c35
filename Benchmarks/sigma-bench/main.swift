print("sigma-bench: coming")
