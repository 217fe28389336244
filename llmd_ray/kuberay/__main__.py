from llmd_ray.kuberay.cli import main

raise SystemExit(main())
