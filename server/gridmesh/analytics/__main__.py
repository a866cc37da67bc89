from gridmesh.analytics.app import main

main()
