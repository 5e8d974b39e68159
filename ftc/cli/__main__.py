from ftc.cli.app import main

main()
