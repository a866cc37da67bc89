from gridmesh.worker.app import main

main()
