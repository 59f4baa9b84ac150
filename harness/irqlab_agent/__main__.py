from irqlab_agent.agent import main

raise SystemExit(main())
