"""LSA + AT-LR (Khalooei et al.): Tables 2, 3, 4 of the paper."""
