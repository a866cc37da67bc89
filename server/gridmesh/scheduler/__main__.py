from gridmesh.scheduler.app import main

main()
